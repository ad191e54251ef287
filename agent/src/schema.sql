-- The agent's write-ahead store (store.rs). Run at every open; each statement is a no-op on
-- a database that has it. Invariants:
-- * a voucher's row and all its events are written in one transaction, so a sale is on
--   disk whole or not at all, and the till is answered only after that commit;
-- * `event_id` is unique and depends only on the outlet, the voucher and the line: a line is
--   one event, however often the till or the agent sends it;
-- * an event leaves 'pending' only on shelfsync's answer (acks/{outlet}, or the HTTP answer),
--   never on the broker's PUBACK;
-- * a voucher row outlives its events (the clean-up deletes it only once none is left), so
--   a retry of a voucher whose events are still kept is always recognised.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- What each voucher held, by digest: a retry of the same body is a duplicate, another body
-- under the same voucher is a conflict.
CREATE TABLE IF NOT EXISTS vouchers (
    voucher    TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

-- One shelfsync movement per voucher line. `payload` is the exact JSON that is sent, and
-- sent again; `sku` and `d_on_hand` (what applying it does to on_hand) serve the local
-- stock read, `applied_seq` (the outlet's seq it was applied at) tells whether a stock value
-- already holds it.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    voucher     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'rejected')),
    created_ms  INTEGER NOT NULL,
    settled_ms  INTEGER,
    applied_seq INTEGER,
    code        TEXT,
    reason      TEXT,
    sku         TEXT NOT NULL,
    d_on_hand   INTEGER NOT NULL
);

-- The forwarder reads pending events in seq order; the stock read sums a SKU's events.
CREATE INDEX IF NOT EXISTS events_pending ON events (seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_sku ON events (sku, state);
-- The clean-up deletes settled events by state and age, and vouchers with no event left; the
-- status counts events by state. (Not a partial index: SQLite uses one only where the query
-- repeats its WHERE.)
CREATE INDEX IF NOT EXISTS events_by_state ON events (state, settled_ms);
CREATE INDEX IF NOT EXISTS events_voucher ON events (voucher);
CREATE INDEX IF NOT EXISTS vouchers_created ON vouchers (created_ms);

-- The latest stock value shelfsync published per SKU (retained `stock/{outlet}/{sku}`, or
-- read over HTTP), kept across restarts so the till can read stock while the link is down.
CREATE TABLE IF NOT EXISTS stock (
    sku        TEXT PRIMARY KEY,
    on_hand    INTEGER NOT NULL,
    reserved   INTEGER NOT NULL,
    available  INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    at         TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
