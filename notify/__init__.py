"""The notifier: delivers the outbox of alarm transitions (webhooks, e-mail) and escalates."""
