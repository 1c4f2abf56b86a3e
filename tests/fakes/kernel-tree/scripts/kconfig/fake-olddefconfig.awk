# fake olddefconfig: the last assignment of each symbol wins (first-seen order),
# symbols listed in `drop` (space separated) end up "is not set".
BEGIN { n = split(drop, d, " "); for (i = 1; i <= n; i++) dropped[d[i]] = 1 }
/^CONFIG_[A-Za-z0-9_]+=/ {
    sym = $0; sub(/=.*/, "", sym); val = $0; sub(/^[^=]*=/, "", val)
    if (!(sym in seen)) { order[++count] = sym; seen[sym] = 1 }
    value[sym] = val; next
}
/^# CONFIG_[A-Za-z0-9_]+ is not set$/ {
    sym = $2
    if (!(sym in seen)) { order[++count] = sym; seen[sym] = 1 }
    value[sym] = "n"; next
}
END {
    print "#"
    print "# Automatically generated file; DO NOT EDIT."
    print "# Linux/x86 6.12.0-fake Kernel Configuration"
    print "#"
    for (i = 1; i <= count; i++) {
        sym = order[i]
        if (sym in dropped || value[sym] == "n") print "# " sym " is not set"
        else print sym "=" value[sym]
    }
}
