printf 'postmaster: root\n' > aliases
postalias aliases
