"""State kept between requests: stored Responses (previous_response_id), thought signatures, the
bounded key-value interface, and shared/ (where it lives: local memory and file, or Redis)."""
