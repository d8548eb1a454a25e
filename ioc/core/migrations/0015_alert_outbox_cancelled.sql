-- A queued alert message that must not go out any more (ioc/alerts/deliver.py): a firing
-- notice or reminder still waiting (for office hours, or a retry) when a person acknowledged
-- or silenced its alert. The row stays, state `cancelled`, the reason in last_error.
ALTER TABLE alert_outbox DROP CONSTRAINT alert_outbox_state_check;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_state_check
    CHECK (state IN ('pending', 'sent', 'failed', 'cancelled'));
