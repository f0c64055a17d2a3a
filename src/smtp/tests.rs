//! Tests: fake SMTP peers on 127.0.0.1 in threads, the test DNS server for MX.
