//! Cyrus SASL application config files (`smtpd.conf`). (Placeholder: being written; issue 2.)
