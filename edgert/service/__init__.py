"""Living as a service: signals, systemd notification, the run summary."""
