//! `dovecot.conf` of every era. (Placeholder: being written; issue 2.)
