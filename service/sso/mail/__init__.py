"""Outgoing mail: templates, SMTP (aiosmtplib) or a file outbox, and a background dispatcher.

Why this package exists: the account lifecycle mails links and notices, and a
mail must never hold up an RPC nor put a link token into a log. The domain
hands a `Mail` (kind, stored recipient, template values) to the `Mailer` port;
`MailDispatcher` queues it (bounded), renders it (`templates`) and delivers it
through a transport (`SmtpTransport` or `FileOutbox`) on worker tasks, retrying
transient failures with exponential backoff. Only this package imports
aiosmtplib; the domain cannot import this package (import-linter).
"""
