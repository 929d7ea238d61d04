"""Small shared helpers: errors, atomic file writes, hardware checks."""
