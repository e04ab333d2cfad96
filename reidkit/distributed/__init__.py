"""Running reidkit across machines (Ray Data). Optional extra: pip install 'reidkit[ray]'."""
