package supervisor

import "testing"

func TestFDHighHysteresis(t *testing.T) {
	for _, tc := range []struct {
		ratio   float64
		demoted bool
		want    bool
	}{
		{0.50, false, false},
		{0.94, false, false},
		{0.95, false, true},
		{0.99, true, true},
		{0.92, true, true}, // stays demoted until below the release mark
		{0.89, true, false},
	} {
		if got := fdHigh(tc.ratio, tc.demoted); got != tc.want {
			t.Errorf("fdHigh(%v, %v) = %v, want %v", tc.ratio, tc.demoted, got, tc.want)
		}
	}
}

func TestFDUsageIsAFraction(t *testing.T) {
	r, err := FDUsage()
	if err != nil || r <= 0 || r >= 1 {
		t.Fatalf("FDUsage = %v, %v", r, err)
	}
}
