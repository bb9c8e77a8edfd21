package ctl

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

func bridgeStatusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the bridge to other regions: per region what went out and came in, lag, offsets, buffer, errors",
		Description: "The node asked (--admin-url) asks every member of its region for its bridge; the tables add\n" +
			"up the members. TO: per other region, the records buffered for it now, the pushes queued and\n" +
			"failed (answered bridged: failed), the records Kafka acknowledged and failed for good. FROM: per\n" +
			"region producing to a topic this region consumes, the lag of the partitions held, the highest\n" +
			"offset committed, and the records imported, skipped on their headers (for other regions),\n" +
			"dropped (degrade, expired, unknown app) and invalid. NODES: each member's buffer and errors.\n" +
			"-o json prints every member's bridge, with its partitions.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runBridgeStatus(c, e) },
	}
}

func runBridgeStatus(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	st, err := cl.Bridge(c.Context)
	if err != nil {
		return adminFailed("bridge status", err)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, st)
	}
	var first *api.BridgeStatus
	to := map[string]*api.BridgeExport{}
	from := map[string]*api.BridgeImport{}
	for _, n := range st.Nodes {
		b := n.Bridge
		if b == nil {
			continue
		}
		if first == nil {
			first = b
		}
		for _, x := range b.To {
			sum := to[x.Region]
			if sum == nil {
				sum = &api.BridgeExport{Region: x.Region}
				to[x.Region] = sum
			}
			sum.Buffered += x.Buffered
			sum.Queued += x.Queued
			sum.Failed += x.Failed
			sum.Produced += x.Produced
			sum.ProduceErrors += x.ProduceErrors
		}
		for _, x := range b.From {
			sum := from[x.Topic]
			if sum == nil {
				sum = &api.BridgeImport{Topic: x.Topic, Region: x.Region, LastOffset: -1}
				from[x.Topic] = sum
			}
			sum.Consumed += x.Consumed
			sum.Imported += x.Imported
			sum.Skipped += x.Skipped
			sum.Dropped += x.Dropped
			sum.Invalid += x.Invalid
			sum.Lag += x.Lag
			sum.LastOffset = max(sum.LastOffset, x.LastOffset)
		}
	}
	kv := newTable(e.stdout)
	kv.row("REGION", st.Region)
	if first == nil {
		kv.row("BRIDGE", "none: no member runs a bridge (pushd --bridge-brokers)")
		return kv.flush()
	}
	kv.row("PEERS", strings.Join(first.Peers, ","))
	kv.row("TOPIC", first.Topic)
	kv.row("GROUP", first.Group)
	kv.row("BROKERS", strings.Join(first.Brokers, ","))
	if err := kv.flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	t := newTable(e.stdout, "TO", "BUFFERED", "QUEUED", "FAILED", "PRODUCED", "PRODUCE_ERRORS")
	for _, r := range sortedKeys(to) {
		x := to[r]
		t.row(r, strconv.FormatInt(x.Buffered, 10), u(x.Queued), u(x.Failed), u(x.Produced), u(x.ProduceErrors))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	t = newTable(e.stdout, "FROM", "TOPIC", "LAG", "LAST_OFFSET", "CONSUMED", "IMPORTED", "SKIPPED", "DROPPED", "INVALID")
	for _, topic := range sortedKeys(from) {
		x := from[topic]
		last := ""
		if x.LastOffset >= 0 {
			last = strconv.FormatInt(x.LastOffset, 10)
		}
		region := x.Region
		if region == "" {
			region = "*" // one topic shared by every region
		}
		t.row(region, topic, strconv.FormatInt(x.Lag, 10), last, u(x.Consumed), u(x.Imported), u(x.Skipped), u(x.Dropped), u(x.Invalid))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	t = newTable(e.stdout, "NODE", "ALIVE", "BUFFER", "BUFFER_BYTES", "PARTITIONS", "ERRORS", "LAST_ERROR")
	for _, n := range st.Nodes {
		b := n.Bridge
		if b == nil {
			t.row(n.ID, strconv.FormatBool(n.Alive), "", "", "", "", "")
			continue
		}
		t.row(n.ID, "true", fmt.Sprintf("%d/%d", b.Buffer.Records, b.Buffer.MaxRecords),
			fmt.Sprintf("%d/%d", b.Buffer.Bytes, b.Buffer.MaxBytes), strconv.Itoa(len(b.Partitions)), u(b.Errors), b.LastError)
	}
	return t.flush()
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
