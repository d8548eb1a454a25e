-- Acknowledge and silence (ioc/alerts/ack.py): two more states of an alert, each a row of
-- `alerts` like every other transition. `acknowledged`: still firing, no reminder until it
-- resolves; `silenced`: no notification until `silenced_until`, then firing again if the
-- condition still holds. One file for both variants: ALTER TABLE works on the plain table and
-- on the TimescaleDB hypertable (its chunks follow).
ALTER TABLE alerts DROP CONSTRAINT alerts_state_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_state_check
    CHECK (state IN ('pending', 'firing', 'resolved', 'acknowledged', 'silenced'));
ALTER TABLE alerts ADD COLUMN actor text;                -- who acknowledged or silenced
ALTER TABLE alerts ADD COLUMN note text;                 -- why, as they wrote it
ALTER TABLE alerts ADD COLUMN silenced_until timestamptz;
ALTER TABLE alerts ADD CONSTRAINT alerts_silenced_until
    CHECK ((state = 'silenced') = (silenced_until IS NOT NULL));
