"""Operations: how the pipelines behave over time (from Dagster's event log), the business KPIs a
dashboard reads, and the HTML report of both."""
