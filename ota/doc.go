// Package ota is Outpost's over-the-air update. Subpackage manifest decides
// whether a signed release offer may be installed (key hierarchy, threshold,
// rollback, freeze, target, mix-and-match); fetch streams one verified
// artifact into the inactive slot, defending against endless data and slow
// retrieval and checking the signed hash. The install half (trial boot,
// health gate, commit or fallback) builds on them. docs/ota.md holds the
// threat model.
package ota
