"""gpt2cli's tests, a package so that their helpers (tests.support) are imported like any module."""
