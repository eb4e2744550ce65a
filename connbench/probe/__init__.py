"""`connbench probe`: hit the app until the connection count stops rising (runner, load, rules)."""
