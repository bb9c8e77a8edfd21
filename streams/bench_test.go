package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/streams/streamstest"
)

const (
	benchDevices     = 20000 // distinct devices the pushes spread over
	benchPayload     = 256   // bytes per message
	benchParallelism = 4     // concurrent calls per GOMAXPROCS: 8 on 2 cores
)

func benchDeviceIDs() []string {
	ids := make([]string, benchDevices)
	for i := range ids {
		ids[i] = "bench-device-" + strconv.Itoa(i)
	}
	return ids
}

// benchRedis starts a fresh server for one benchmark run. Automatic AOF
// rewrites are off so that figures do not depend on when the file crosses
// the rewrite threshold; DESIGN.md gives their cost separately.
func benchRedis(b *testing.B, fsync string) *streamstest.Server {
	b.Helper()
	return streamstest.StartRedis(b, streamstest.AppendFsync(fsync),
		streamstest.Args("--auto-aof-rewrite-percentage", "0"))
}

// redisCPU returns the CPU seconds redis-server and its children (AOF
// rewrites) have used. Per operation it is a steadier figure than wall-clock
// rates on a shared 2-core machine.
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		switch name {
		case "used_cpu_user", "used_cpu_sys", "used_cpu_user_children", "used_cpu_sys_children":
			if ok {
				f, _ := strconv.ParseFloat(val, 64)
				sum += f
			}
		}
	}
	return sum
}

// BenchmarkStore_Append measures durable device-pushes per second: one op is
// one Append of a 256-byte message to a batch of devices, 8 calls in flight,
// against a real redis-server under each appendfsync policy. perdevice=true
// runs one script call per device, the shape used on Redis Cluster.
func BenchmarkStore_Append(b *testing.B) {
	devices := benchDeviceIDs()
	payload := make([]byte, benchPayload)
	for _, fsync := range []string{"always", "everysec"} {
		for _, perDevice := range []bool{false, true} {
			for _, batch := range []int{1, 100, 500} {
				if perDevice && batch == 1 {
					continue // the same as batched with one device
				}
				name := fmt.Sprintf("fsync=%s/perdevice=%v/batch=%d", fsync, perDevice, batch)
				b.Run(name, func(b *testing.B) {
					cfg := Config{}
					if perDevice {
						cfg.ScriptBatch = 1
					}
					rdb := benchRedis(b, fsync).Client(b)
					s := New(rdb, cfg)
					var next atomic.Int64
					b.SetParallelism(benchParallelism)
					cpu := redisCPU(b, rdb)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						ctx := context.Background()
						for pb.Next() {
							n := next.Add(1)
							start := int(n) * batch % (len(devices) - batch)
							m := Message{ID: "bench-" + strconv.FormatInt(n, 10), Business: "bench", Priority: PriorityNormal, Payload: payload}
							if _, err := s.Append(ctx, m, devices[start:start+batch]); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "device-pushes/s")
					b.ReportMetric((redisCPU(b, rdb)-cpu)*1e6/float64(b.N*batch), "redis-µs/push")
				})
			}
		}
	}
}

// BenchmarkStore_AckMany measures applied cumulative acks per second: one op
// is one AckMany for a batch of devices, each ack moving a device's cursor by
// one entry and trimming it, 8 calls in flight.
func BenchmarkStore_AckMany(b *testing.B) {
	devices := benchDeviceIDs()
	for _, fsync := range []string{"always", "everysec"} {
		for _, batch := range []int{100, 500} {
			b.Run(fmt.Sprintf("fsync=%s/batch=%d", fsync, batch), func(b *testing.B) {
				rdb := benchRedis(b, fsync).Client(b)
				s := New(rdb, Config{InboxMaxLen: 1 << 30, DedupeWindow: 1})
				windows := len(devices) / batch
				rounds := (b.N + windows - 1) / windows
				epochs := benchFill(b, s, devices, rounds)

				var next, applied atomic.Int64
				b.SetParallelism(benchParallelism)
				cpu := redisCPU(b, rdb)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					reqs := make([]AckRequest, batch)
					for pb.Next() {
						// Op i acks round i/windows for window i%windows, so
						// the ops for one device are windows ops apart and
						// nearly always arrive in order.
						i := int(next.Add(1) - 1)
						w, round := i%windows, uint64(i/windows+1)
						for j := range reqs {
							d := devices[w*batch+j]
							reqs[j] = AckRequest{Device: d, Epoch: epochs[d], Seq: round}
						}
						ok, err := s.AckMany(ctx, reqs)
						if err != nil {
							b.Error(err)
							return
						}
						for _, o := range ok {
							if o {
								applied.Add(1)
							}
						}
					}
				})
				b.ReportMetric(float64(applied.Load())/b.Elapsed().Seconds(), "acks/s")
				b.ReportMetric(float64(applied.Load())/float64(b.N*batch), "applied")
				b.ReportMetric((redisCPU(b, rdb)-cpu)*1e6/float64(b.N*batch), "redis-µs/ack")
			})
		}
	}
}

// benchFill appends rounds messages to every device and returns each
// device's epoch.
func benchFill(b *testing.B, s *Store, devices []string, rounds int) map[string]string {
	b.Helper()
	epochs := make(map[string]string, len(devices))
	for r := 0; r < rounds; r++ {
		for start := 0; start < len(devices); start += 1000 {
			end := min(start+1000, len(devices))
			res, err := s.Append(context.Background(), Message{ID: "fill-" + strconv.Itoa(r), Payload: []byte("x")}, devices[start:end])
			if err != nil {
				b.Fatal(err)
			}
			for _, a := range res {
				epochs[a.Device] = a.Epoch
			}
		}
	}
	return epochs
}

// BenchmarkStore_Open measures device connects per second: one op is one
// device claiming its route and resuming from its cursor (one unacked
// 256-byte entry after it), 8 calls in flight. path=open sends both scripts
// in one pipeline (Open); path=claim+resume is the two round trips of
// ClaimRoute followed by Resume that Open replaces. latency-µs is the mean
// time one connect waits for its answers.
func BenchmarkStore_Open(b *testing.B) {
	devices := benchDeviceIDs()
	payload := make([]byte, benchPayload)
	for _, fsync := range []string{"always", "everysec"} {
		for _, path := range []string{"open", "claim+resume"} {
			b.Run(fmt.Sprintf("fsync=%s/path=%s", fsync, path), func(b *testing.B) {
				rdb := benchRedis(b, fsync).Client(b)
				s := New(rdb, Config{})
				epochs := make(map[string]string, len(devices))
				for start := 0; start < len(devices); start += 1000 {
					res, err := s.Append(context.Background(), Message{ID: "fill", Payload: payload}, devices[start:start+1000])
					if err != nil {
						b.Fatal(err)
					}
					for _, a := range res {
						epochs[a.Device] = a.Epoch
					}
				}
				var next, waited atomic.Int64
				b.SetParallelism(benchParallelism)
				cpu := redisCPU(b, rdb)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						i := int(next.Add(1))
						d := devices[i%len(devices)]
						node := "bench-node-" + strconv.Itoa(i%4)
						pos := Position{Epoch: epochs[d]}
						start := time.Now()
						var res Resumed
						var err error
						if path == "open" {
							_, _, res, err = s.Open(ctx, d, node, pos, 16)
						} else if _, _, err = s.ClaimRoute(ctx, d, node); err == nil {
							res, err = s.Resume(ctx, d, pos, 16)
						}
						waited.Add(int64(time.Since(start)))
						if err == nil && (!res.Recovered || len(res.Entries) != 1) {
							err = fmt.Errorf("resumed %+v, want one recovered entry", res)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
				b.ReportMetric(float64(waited.Load())/1e3/float64(b.N), "latency-µs")
				b.ReportMetric((redisCPU(b, rdb)-cpu)*1e6/float64(b.N), "redis-µs/open")
			})
		}
	}
}

// BenchmarkStore_Heartbeat measures what a node's heartbeat costs Redis: one
// op is one Heartbeat, called back to back from one goroutine as a node
// does (once a second). shape=set is the plain SET PX + SADD pipeline that
// heartbeat.lua replaced, for comparison.
func BenchmarkStore_Heartbeat(b *testing.B) {
	for _, fsync := range []string{"always", "everysec"} {
		for _, shape := range []string{"script", "set"} {
			b.Run(fmt.Sprintf("fsync=%s/shape=%s", fsync, shape), func(b *testing.B) {
				benchHeartbeat(b, fsync, shape)
			})
		}
	}
}

func benchHeartbeat(b *testing.B, fsync, shape string) {
	rdb := benchRedis(b, fsync).Client(b)
	s := New(rdb, Config{})
	ctx := context.Background()
	info := NodeInfo{ID: "bench-node", DeviceAddr: "10.0.0.1:8080", TCPAddr: "10.0.0.1:8081",
		Conns: 123456}
	if _, err := s.Heartbeat(ctx, info); err != nil {
		b.Fatal(err)
	}
	cpu := redisCPU(b, rdb)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if shape == "script" {
			if _, err := s.Heartbeat(ctx, info); err != nil {
				b.Fatal(err)
			}
			continue
		}
		info.Updated = time.Now()
		v, _ := json.Marshal(info)
		pipe := rdb.Pipeline()
		pipe.Set(ctx, heartbeatKey(info.ID), v, s.cfg.NodeTTL)
		pipe.SAdd(ctx, nodesKey, info.ID)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "latency-µs")
	b.ReportMetric((redisCPU(b, rdb)-cpu)*1e6/float64(b.N), "redis-µs/heartbeat")
}
