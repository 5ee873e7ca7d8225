"""Everything a person looks at: rich tables, JSON, HTML."""
