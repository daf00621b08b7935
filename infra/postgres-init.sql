-- One PostgreSQL instance, one database per service.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
