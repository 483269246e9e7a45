from engine_fixtures import codec, documents, fields, make_documents, stored_fields, writer  # noqa: F401 - shared fixtures
