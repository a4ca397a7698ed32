"""The web app: sign-up, double opt-in, manage, one-click unsubscribe and the live preview."""
