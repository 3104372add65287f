"""PostgreSQL outside the stream: engines, URLs, migrations, and loading
versioned reference data.
"""
