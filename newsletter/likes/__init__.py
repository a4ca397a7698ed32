"""Papers a reader likes: read from their reference manager's export, fetched in the background."""
