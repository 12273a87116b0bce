DROP TABLE content.project_files;
DROP TABLE content.blobs;
DROP TABLE content.project_views;
DROP TABLE content.project_likes;
DROP TABLE content.projects;
DROP FUNCTION content.project_words(text, text[]);
DROP FUNCTION content.project_document(text, text, text[]);
