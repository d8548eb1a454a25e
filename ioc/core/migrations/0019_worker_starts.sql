-- Every start of a worker process (streams/status.py), written once at its start: the history
-- `worker_status` (one row per running instance, deleted at a clean stop) cannot keep.
-- A restart is a start of an instance id that had started before (dashboards/pipeline.py).
-- `previous_heartbeat_at`: the instance's last heartbeat still in `worker_status` when it
-- started again (NULL after a clean stop, which deletes that row, or at a first start).
CREATE TABLE worker_starts (
    instance_id           text        NOT NULL,
    started_at            timestamptz NOT NULL,
    host                  text        NOT NULL,
    pid                   integer     NOT NULL,
    previous_heartbeat_at timestamptz,
    PRIMARY KEY (instance_id, started_at)
);
CREATE INDEX worker_starts_by_time ON worker_starts (started_at);
