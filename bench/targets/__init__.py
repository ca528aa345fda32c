"""WSGI apps `bench.api` serves under gunicorn beside `wsgi:app`, as baselines, and the
wrapper that counts the CPU an answer costs inside the app."""
