"""The sandbox: a small system of record (orders and refunds, supplier invoices, access grants)
that the demo's tools reach over HTTP under /sandbox/, as a real deployment reaches a real one.

It is deliberately a separate "external" system: it shares the process and the database with
the product for convenience only, and never imports product code (except the role check that
guards the operators' faults switch)."""
