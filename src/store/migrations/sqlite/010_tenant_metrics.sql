-- Tenant metrics (GET /api/v1/tenants/{tenant}/metrics) read one tenant's finished instances by
-- the time they ended.
CREATE INDEX instances_tenant_finished ON instances (tenant_id, finished_at)
    WHERE finished_at IS NOT NULL;
