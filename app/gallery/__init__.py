"""The gallery page: a user's public images as HTML, for people with a browser."""
