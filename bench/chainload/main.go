// chainload: a closed-loop gRPC load generator for calls ghz cannot express.
//
// Why it exists: Refresh spends the token it is given and returns a successor,
// so every request depends on the previous response of its chain; ghz only
// replays fixed payloads. chainload runs C independent chains over K
// connections; in "refresh" mode each chain presents its current refresh
// token and keeps the successor from the reply, in "unary" mode each chain
// sends one fixed payload (used to drive the echo ceiling through the very
// same code path, so the Refresh/echo ratio compares like with like); in
// "mixed" mode (mixed.go) each chain lives a whole session: Login, then
// ValidateToken and Refresh calls in a fixed ratio, carrying the tokens.
//
// Messages are encoded by hand (protowire) and sent through a pass-through
// codec: no generated stubs, no reflection, and a per-call cost as low as ghz's.
// Output: one JSON object on stdout (count, rps, latency percentiles in ms,
// errors by status code). Requests that complete during the warm-up are not
// counted; requests still in flight when the window closes are ignored.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec passes already-encoded protobuf bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// stringField encodes a message whose only set field is string field `num`.
func stringField(num protowire.Number, value string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, value)
}

// bytesField returns the first length-delimited field `num` of a message.
func bytesField(msg []byte, num protowire.Number) ([]byte, bool) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, false
		}
		msg = msg[l:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil, false
			}
			if n == num {
				return v, true
			}
			msg = msg[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, msg)
		if m < 0 {
			return nil, false
		}
		msg = msg[m:]
	}
	return nil, false
}

// nextRefreshToken reads RefreshResponse.tokens(1).refresh_token(2).
func nextRefreshToken(resp []byte) (string, bool) {
	pair, ok := bytesField(resp, 1)
	if !ok {
		return "", false
	}
	token, ok := bytesField(pair, 2)
	return string(token), ok && len(token) > 0
}

type chainResult struct {
	latencies []time.Duration
	errors    map[string]int
	lost      bool
}

type report struct {
	Mode        string             `json:"mode"`
	Method      string             `json:"method"`
	Concurrency int                `json:"concurrency"`
	Connections int                `json:"connections"`
	DurationS   float64            `json:"duration_s"`
	Count       int                `json:"count"`
	RPS         float64            `json:"rps"`
	LatencyMs   map[string]float64 `json:"latency_ms"`
	Errors      map[string]int     `json:"errors"`
	ChainsLost  int                `json:"chains_lost"`
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var tokens []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" {
			tokens = append(tokens, line)
		}
	}
	return tokens, scanner.Err()
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "host:port")
	mode := flag.String("mode", "unary", "unary (fixed payload) or refresh (chained tokens)")
	method := flag.String("method", "/grpc.health.v1.Health/Check", "full method name")
	payloadHex := flag.String("payload-hex", "", "unary mode: the request message, hex-encoded")
	tokensFile := flag.String("tokens", "", "refresh mode: one refresh token per line, one chain each")
	concurrency := flag.Int("c", 16, "unary mode: concurrent chains")
	connections := flag.Int("connections", 8, "TCP connections; chains are spread over them")
	warmup := flag.Duration("warmup", 2*time.Second, "load applied before measuring")
	duration := flag.Duration("duration", 10*time.Second, "measured window")
	timeout := flag.Duration("timeout", 10*time.Second, "per-call deadline")
	usersFile := flag.String("users", "", "mixed mode: email<TAB>password<TAB>app_id per line")
	refreshes := flag.Int("refreshes", 20, "mixed mode: refreshes per login")
	validations := flag.Int("validations", 200, "mixed mode: validations per login")
	flag.Parse()

	var accounts []account
	if *mode == "mixed" {
		var err error
		if accounts, err = readAccounts(*usersFile); err != nil || len(accounts) == 0 {
			fmt.Fprintf(os.Stderr, "chainload: no accounts in %q: %v\n", *usersFile, err)
			os.Exit(2)
		}
		if *refreshes < 1 || *validations < *refreshes {
			fmt.Fprintln(os.Stderr, "chainload: need refreshes >= 1 and validations >= refreshes")
			os.Exit(2)
		}
	}

	var tokens []string
	if *mode == "refresh" {
		var err error
		if tokens, err = readTokens(*tokensFile); err != nil || len(tokens) == 0 {
			fmt.Fprintf(os.Stderr, "chainload: no refresh tokens in %q: %v\n", *tokensFile, err)
			os.Exit(2)
		}
		*concurrency = len(tokens)
	} else if *mode != "unary" && *mode != "mixed" {
		fmt.Fprintf(os.Stderr, "chainload: unknown mode %q\n", *mode)
		os.Exit(2)
	}
	payload, err := hex.DecodeString(*payloadHex)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chainload: bad -payload-hex: %v\n", err)
		os.Exit(2)
	}
	if *connections > *concurrency {
		*connections = *concurrency
	}

	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conn, err := grpc.Dial(*target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			fmt.Fprintf(os.Stderr, "chainload: dial: %v\n", err)
			os.Exit(1)
		}
		defer conn.Close()
		conns[i] = conn
	}

	if *mode == "mixed" {
		runMixed(conns, accounts, *concurrency, *refreshes, *validations, *warmup, *duration, *timeout)
		return
	}

	start := time.Now()
	measureFrom := start.Add(*warmup)
	stopAt := measureFrom.Add(*duration)
	results := make([]chainResult, *concurrency)
	var wg sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res := chainResult{errors: map[string]int{}}
			conn := conns[i%len(conns)]
			token := ""
			if tokens != nil {
				token = tokens[i]
			}
			for {
				t0 := time.Now()
				if !t0.Before(stopAt) {
					break
				}
				req := payload
				if tokens != nil {
					req = stringField(1, token)
				}
				var resp []byte
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				err := conn.Invoke(ctx, *method, &req, &resp)
				cancel()
				t1 := time.Now()
				counted := !t0.Before(measureFrom) && t1.Before(stopAt)
				if err != nil {
					if counted {
						res.errors[status.Code(err).String()]++
					}
					if tokens != nil { // the chain's token is gone or unknown: stop it
						res.lost = true
						break
					}
					continue
				}
				if tokens != nil {
					next, ok := nextRefreshToken(resp)
					if !ok {
						res.errors["BadResponse"]++
						res.lost = true
						break
					}
					token = next
				}
				if counted {
					res.latencies = append(res.latencies, t1.Sub(t0))
				}
			}
			results[i] = res
		}(i)
	}
	wg.Wait()

	var all []time.Duration
	errs := map[string]int{}
	lost := 0
	for _, r := range results {
		all = append(all, r.latencies...)
		for k, v := range r.errors {
			errs[k] += v
		}
		if r.lost {
			lost++
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	lat := map[string]float64{
		"p50": percentile(all, 50), "p90": percentile(all, 90), "p95": percentile(all, 95),
		"p99": percentile(all, 99), "max": percentile(all, 100), "mean": 0,
	}
	if len(all) > 0 {
		lat["mean"] = float64(sum) / float64(len(all)) / float64(time.Millisecond)
	}
	out := report{
		Mode: *mode, Method: *method, Concurrency: *concurrency, Connections: len(conns),
		DurationS: duration.Seconds(), Count: len(all),
		RPS: float64(len(all)) / duration.Seconds(), LatencyMs: lat, Errors: errs, ChainsLost: lost,
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
