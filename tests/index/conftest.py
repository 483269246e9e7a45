from engine_fixtures import documents, make_documents, stored_fields, writer  # noqa: F401 - shared fixtures
