DROP TABLE content.agent_label_moves;
DROP TABLE content.agent_labels;
DROP TABLE content.agent_versions;
DROP TABLE content.agents;
