"""GB/T 26875.3-2011 (fire panels' user information transmission devices) over TCP."""
