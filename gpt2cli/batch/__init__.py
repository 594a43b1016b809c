"""Many records at once: local.py on this machine (records.py: their input and resumable output)."""
