"""Demo scenarios: seeded generators of example feeds and the story the demo plays. Not platform code:
no production DAG or pipeline imports this package (tests/unit/test_platform_names.py checks it)."""
