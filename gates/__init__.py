"""The gates a candidate must pass before it may become a champion, and `emp gates`."""
