DROP TABLE content.message_appends;
DROP TABLE content.messages;
DROP TABLE content.conversations;
