package load

import (
	"errors"
	"strings"
	"testing"
)

func TestPlan_Split(t *testing.T) {
	t.Parallel()
	ws := "ws://127.0.0.1:8080/v1/ws"
	shares, err := Plan{}.split(40000, "connections", ws)
	if err != nil || len(shares) != 3 {
		t.Fatalf("40000 conns: %v, %v", shares, err)
	}
	want := []Share{{0, 13334, 40000, "127.0.0.2"}, {13334, 13333, 40000, "127.0.0.3"}, {26667, 13333, 40000, "127.0.0.4"}}
	for i := range want {
		if shares[i] != want[i] {
			t.Errorf("share %d = %+v, want %+v", i, shares[i], want[i])
		}
	}
	shares, _ = Plan{Workers: 4, Sources: []string{"10.0.0.1", "10.0.0.2"}}.split(10, "devices", "ws://push.example.com/v1/ws")
	if shares[2].Source != "10.0.0.1" || shares[3].Source != "10.0.0.2" || shares[0].Count != 3 || shares[3].Count != 2 {
		t.Errorf("explicit sources: %+v", shares)
	}
	shares, _ = Plan{Workers: 2}.split(10, "devices", "ws://push.example.com/v1/ws")
	if shares[0].Source != "" {
		t.Errorf("remote target got a loopback source: %+v", shares)
	}
	shares, _ = Plan{Workers: 8}.split(3, "devices", ws)
	if len(shares) != 3 {
		t.Errorf("more workers than units: %+v", shares)
	}
	if ports := ephemeralPorts(); ports > 0 {
		if _, err := (Plan{Workers: 8, Sources: []string{"127.0.0.2"}}).split(2*ports, "connections", ws); err == nil || !strings.Contains(err.Error(), "ephemeral port range") {
			t.Errorf("one source for %d conns: %v", 2*ports, err)
		}
	}
}

func TestPlan_SplitErrorsArePlanErrors(t *testing.T) {
	t.Parallel()
	ws := "ws://127.0.0.1:8080/v1/ws"
	cases := []struct {
		plan Plan
		n    int
		want string
	}{
		{Plan{}, 0, "at least one"},
		{Plan{Workers: -1}, 10, "must not be negative"},
		{Plan{Workers: 2}, 40000, "at most 15000"},
		{Plan{Sources: []string{"nope"}}, 10, `"nope" is not an IP`},
		{Plan{Workers: 300}, 3000, "too many for the default loopback sources"},
	}
	for _, c := range cases {
		_, err := c.plan.split(c.n, "connections", ws)
		if !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v over %d: %v, want ErrPlan saying %q", c.plan, c.n, err, c.want)
		}
	}
}
