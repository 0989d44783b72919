-- ruvector 0.1.0 -> 0.2.0 (ALTER EXTENSION ruvector UPDATE).
\echo Use "ALTER EXTENSION ruvector UPDATE TO '0.2.0'" to load this file. \quit

-- The SQL surface of 0.2.0 is that of 0.1.0; the library changed:
-- - a hot standby's tenant registry follows the primary's catalog (tenants created,
--   suspended, resumed and deleted there), and its usage is counted again on promotion;
-- - with ruvector.audit_enabled on, a standby writes its audit records to the server log
--   instead of failing to write ruvector.tenant_audit_log.
-- Index pages are unchanged (format 4): no REINDEX.
