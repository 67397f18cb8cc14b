"""The HTTP service: the application factory, the email-facing routes, what every request
goes through, health checks and the logs."""
