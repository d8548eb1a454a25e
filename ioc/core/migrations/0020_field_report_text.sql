-- Open311 free text of a field report, stored redacted (ioc/core/redact.py: no phone numbers,
-- e-mail addresses or ID numbers): the citizen's description and address, the agency's notes.
-- Served by GET /open311/v2/requests; never shown on a dashboard.
ALTER TABLE field_reports
    ADD COLUMN description    text,
    ADD COLUMN address_string text,
    ADD COLUMN status_notes   text;
