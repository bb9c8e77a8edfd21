package load

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
)

// Reasons counts failures by a short reason. It keeps at most eight
// distinct reasons and counts the rest as "other", so a run with
// thousands of failures has a readable summary. The zero value is empty
// and ready; a Reasons is not safe for concurrent use.
type Reasons map[string]int

const maxReasons = 8

// Add counts n failures for reason.
func (r *Reasons) Add(reason string, n int) {
	if *r == nil {
		*r = Reasons{}
	}
	if _, ok := (*r)[reason]; !ok && len(*r) >= maxReasons {
		reason = "other"
	}
	(*r)[reason] += n
}

// Merge adds o's counts.
func (r *Reasons) Merge(o Reasons) {
	for k, v := range o {
		r.Add(k, v)
	}
}

// Count is the number of failures.
func (r Reasons) Count() int {
	n := 0
	for _, v := range r {
		n += v
	}
	return n
}

// String is "N× reason" for each reason, sorted, separated by "; ".
func (r Reasons) String() string {
	parts := make([]string, 0, len(r))
	for k, v := range r {
		parts = append(parts, fmt.Sprintf("%d× %s", v, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// errorReason shortens a network error to what is common to many
// connections (no port numbers), so failures group by cause.
func errorReason(err error) string {
	var ne net.Error
	var op *net.OpError
	var sys *os.SyscallError
	var up *client.UpgradeError
	var ce *client.CloseError
	var ae *api.APIError
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("HTTP %d %s", ae.Status, ae.Code)
	case errors.As(err, &up):
		return fmt.Sprintf("upgrade refused: HTTP %d", up.Status)
	case errors.As(err, &ce):
		return fmt.Sprintf("closed by server: %d %s", ce.Code, ce.Reason)
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &sys):
		return sys.Error()
	case errors.As(err, &op) && op.Err != nil:
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}
