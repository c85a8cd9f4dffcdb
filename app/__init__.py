"""Gallery API: users and their verified image URLs."""
