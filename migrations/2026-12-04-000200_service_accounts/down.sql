DROP TABLE auth.service_accounts;
