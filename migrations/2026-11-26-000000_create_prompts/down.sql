DROP TABLE content.prompt_label_moves;
DROP TABLE content.prompt_labels;
DROP TABLE content.prompt_versions;
DROP TABLE content.prompts;
