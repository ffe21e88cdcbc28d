// Package logfield formats log field values the way an operator reads them.
package logfield

import "time"

// Dur renders d with its unit, to three significant digits ("22.8ms", "1.5s", "340µs",
// "100ms"): zerolog's Dur writes a bare number whose unit the reader has to know, and
// d.String() alone prints every nanosecond ("22.812345ms").
func Dur(d time.Duration) string {
	a := d
	if a < 0 {
		a = -a
	}
	step := time.Duration(1)
	for step <= a/1000 {
		step *= 10
	}
	return d.Round(step).String()
}
