"""Tables of the billing store, in SQL both SQLite and PostgreSQL accept.

Money is BIGINT micro-units so both databases sum it exactly; instants are
BIGINT microseconds since the Unix epoch (UTC), so ranges and keyset paging
are integer comparisons. The ledger is append-only: rows are never updated
or deleted, and its primary key is the idempotency key.

``billing_balances`` holds the ledger's running sum per scope (an account, a site, a
tenant), moved in the same transaction as every row posted: a call's credit check
reads one row instead of summing an account's whole history. A database from before
the table existed is summed into it once, at the first start that creates it.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_accounts (
    id                 TEXT PRIMARY KEY,
    level              TEXT NOT NULL,
    tenant             TEXT NOT NULL,
    site               TEXT NOT NULL,
    payment            TEXT NOT NULL,
    credit_limit       BIGINT,
    max_concurrent     INTEGER,
    max_spend_per_hour BIGINT,
    created_us         BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_meta (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO billing_meta (name, value) VALUES ('accounts_version', 0) ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS billing_plans (
    account     TEXT NOT NULL,
    active_from BIGINT NOT NULL,
    tariff      TEXT NOT NULL,
    PRIMARY KEY (account, active_from)
);
CREATE TABLE IF NOT EXISTS billing_calls (
    session_id  TEXT NOT NULL,
    leg         TEXT NOT NULL,
    node        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    site        TEXT NOT NULL,
    caller      TEXT NOT NULL,
    callee      TEXT NOT NULL,
    account     TEXT NOT NULL,
    ingress     INTEGER NOT NULL,
    category    TEXT NOT NULL,
    start_us    BIGINT NOT NULL,
    answer_us   BIGINT,
    end_us      BIGINT NOT NULL,
    disposition TEXT NOT NULL,
    sip_status  INTEGER NOT NULL,
    codec       TEXT NOT NULL,
    packets_in  BIGINT NOT NULL,
    packets_out BIGINT NOT NULL,
    bytes_in    BIGINT NOT NULL,
    bytes_out   BIGINT NOT NULL,
    call_id     TEXT NOT NULL,
    ended_by    TEXT NOT NULL,
    current_run INTEGER NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (session_id, leg)
);
CREATE INDEX IF NOT EXISTS billing_calls_tenant_start ON billing_calls (tenant, start_us, session_id, leg);
CREATE INDEX IF NOT EXISTS billing_calls_status ON billing_calls (status, start_us);
CREATE TABLE IF NOT EXISTS billing_ratings (
    session_id     TEXT NOT NULL,
    leg            TEXT NOT NULL,
    run            INTEGER NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    account        TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    site           TEXT NOT NULL,
    tariff         TEXT NOT NULL,
    tariff_version TEXT NOT NULL,
    number         TEXT NOT NULL,
    destination    TEXT NOT NULL,
    prefix         TEXT NOT NULL,
    duration_us    BIGINT NOT NULL,
    billed_s       BIGINT NOT NULL,
    connect_fee    TEXT NOT NULL,
    precise        TEXT NOT NULL,
    adjustment     TEXT NOT NULL,
    cost           BIGINT NOT NULL,
    charged        BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    rounding       TEXT NOT NULL,
    decimals       INTEGER NOT NULL,
    spans          TEXT NOT NULL,
    rated_us       BIGINT NOT NULL,
    PRIMARY KEY (session_id, leg, run)
);
CREATE TABLE IF NOT EXISTS billing_ledger (
    entry      TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    site       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    session_id TEXT,
    leg        TEXT,
    run        INTEGER,
    at_us      BIGINT NOT NULL,
    note       TEXT NOT NULL,
    created_us BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_ledger_account ON billing_ledger (account, at_us);
CREATE INDEX IF NOT EXISTS billing_ledger_site ON billing_ledger (tenant, site, at_us);
-- A tenant's last hour of spend (its hourly limit) without reading its whole history.
CREATE INDEX IF NOT EXISTS billing_ledger_tenant ON billing_ledger (tenant, at_us);
CREATE TABLE IF NOT EXISTS billing_balances (
    scope  TEXT PRIMARY KEY,
    amount BIGINT NOT NULL
);
INSERT INTO billing_balances (scope, amount)
SELECT scope, SUM(amount) FROM (
    SELECT 'account:' || account AS scope, amount FROM billing_ledger
    UNION ALL SELECT 'site:' || tenant || '/' || site, amount FROM billing_ledger
    UNION ALL SELECT 'tenant:' || tenant, amount FROM billing_ledger
) AS posted
WHERE NOT EXISTS (SELECT 1 FROM billing_balances)
GROUP BY scope;
CREATE TABLE IF NOT EXISTS billing_open_calls (
    session_id    TEXT NOT NULL,
    leg           TEXT NOT NULL,
    node          TEXT NOT NULL,
    record        TEXT NOT NULL,
    chain         TEXT NOT NULL,
    reserved      BIGINT NOT NULL,
    checkpoint_us BIGINT NOT NULL,
    PRIMARY KEY (session_id, leg)
);
"""
