// Mixed mode: a realistic session life cycle, which must carry state.
//
// Each chain logs a user in, then for every refresh performs `validations /
// refreshes` ValidateToken calls with its current access token, then rotates
// the refresh token, keeping the successor pair; after `refreshes` rotations it
// logs in again (a new session). The default 1 : 20 : 200 is one login per 20
// refreshes per 200 validations. Latencies and errors are kept per method and
// in total; a failed Refresh or Login restarts the chain with a fresh Login.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	methodLogin    = "/sso.v1.Auth/Login"
	methodRefresh  = "/sso.v1.Auth/Refresh"
	methodValidate = "/sso.v1.Auth/ValidateToken"
)

type account struct {
	email, password string
	appID           uint64
}

// readAccounts reads "email<TAB>password<TAB>app_id" lines.
func readAccounts(path string) ([]account, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []account
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		parts := strings.Split(strings.TrimSpace(scanner.Text()), "\t")
		if len(parts) != 3 {
			continue
		}
		app, err := strconv.ParseUint(parts[2], 10, 32)
		if err != nil {
			return nil, err
		}
		out = append(out, account{parts[0], parts[1], app})
	}
	return out, scanner.Err()
}

func loginRequest(a account) []byte {
	b := stringField(1, a.email)
	b = append(b, stringField(2, a.password)...)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, a.appID)
	return append(b, stringField(4, "bench-mixed")...)
}

// tokenPair reads (Login|Refresh)Response.tokens(1).{access_token(1), refresh_token(2)}.
func tokenPair(resp []byte) (string, string, bool) {
	pair, ok := bytesField(resp, 1)
	if !ok {
		return "", "", false
	}
	access, ok1 := bytesField(pair, 1)
	refresh, ok2 := bytesField(pair, 2)
	return string(access), string(refresh), ok1 && ok2 && len(access) > 0 && len(refresh) > 0
}

type methodStats struct {
	latencies []time.Duration
	errors    map[string]int
}

type methodReport struct {
	Count     int                `json:"count"`
	RPS       float64            `json:"rps"`
	LatencyMs map[string]float64 `json:"latency_ms"`
	Errors    map[string]int     `json:"errors"`
}

func latencyMap(all []time.Duration) map[string]float64 {
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	return map[string]float64{
		"p50": percentile(all, 50), "p95": percentile(all, 95),
		"p99": percentile(all, 99), "max": percentile(all, 100),
	}
}

func runMixed(conns []*grpc.ClientConn, accounts []account, concurrency, refreshes, validations int,
	warmup, duration, timeout time.Duration) {
	perRefresh := validations / refreshes
	start := time.Now()
	measureFrom := start.Add(warmup)
	stopAt := measureFrom.Add(duration)
	names := []string{methodLogin, methodRefresh, methodValidate}
	results := make([]map[string]*methodStats, concurrency)
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stats := map[string]*methodStats{}
			for _, n := range names {
				stats[n] = &methodStats{errors: map[string]int{}}
			}
			conn := conns[i%len(conns)]
			call := func(method string, req []byte) ([]byte, bool) {
				var resp []byte
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				err := conn.Invoke(ctx, method, &req, &resp)
				cancel()
				t1 := time.Now()
				counted := !t0.Before(measureFrom) && t1.Before(stopAt)
				if err != nil {
					if counted {
						stats[method].errors[status.Code(err).String()]++
					}
					return nil, false
				}
				if counted {
					stats[method].latencies = append(stats[method].latencies, t1.Sub(t0))
				}
				return resp, true
			}
			next := i
			for time.Now().Before(stopAt) {
				a := accounts[next%len(accounts)]
				next += concurrency
				resp, ok := call(methodLogin, loginRequest(a))
				if !ok {
					time.Sleep(10 * time.Millisecond) // back off as a client would; no hot loop
					continue
				}
				access, refresh, ok := tokenPair(resp)
				if !ok {
					stats[methodLogin].errors["BadResponse"]++
					continue
				}
			session:
				for r := 0; r < refreshes && time.Now().Before(stopAt); r++ {
					for v := 0; v < perRefresh && time.Now().Before(stopAt); v++ {
						call(methodValidate, stringField(1, access))
					}
					resp, ok := call(methodRefresh, stringField(1, refresh))
					if !ok {
						break session
					}
					if access, refresh, ok = tokenPair(resp); !ok {
						stats[methodRefresh].errors["BadResponse"]++
						break session
					}
				}
			}
			results[i] = stats
		}(i)
	}
	wg.Wait()

	methods := map[string]methodReport{}
	var total []time.Duration
	errs := map[string]int{}
	for _, n := range names {
		var all []time.Duration
		merr := map[string]int{}
		for _, r := range results {
			all = append(all, r[n].latencies...)
			for k, v := range r[n].errors {
				merr[k] += v
				errs[k] += v
			}
		}
		total = append(total, all...)
		methods[n] = methodReport{
			Count: len(all), RPS: float64(len(all)) / duration.Seconds(),
			LatencyMs: latencyMap(all), Errors: merr,
		}
	}
	out := struct {
		report
		Methods map[string]methodReport `json:"methods"`
	}{
		report: report{
			Mode: "mixed", Method: "mixed", Concurrency: concurrency, Connections: len(conns),
			DurationS: duration.Seconds(), Count: len(total),
			RPS: float64(len(total)) / duration.Seconds(), LatencyMs: latencyMap(total),
			Errors: errs,
		},
		Methods: methods,
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
