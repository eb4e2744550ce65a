"""The Django project under test. Every setting that matters comes from the environment."""
