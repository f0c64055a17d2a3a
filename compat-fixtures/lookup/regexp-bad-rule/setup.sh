printf '/(/ REJECT\n/^x@/ REJECT x-rejected\n' > rcpt.re
