package teamauth

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/client"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	aliceToken = "alice-token-0123456789abcdef"
	bobToken   = "bob-token-0123456789abcdef00"
)

func writeTokens(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "tokens")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startAuth(t *testing.T, path string) (*authenticator, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	a := newAuthenticator(&Config{TokensFile: path, ReloadInterval: 20 * time.Millisecond}, zap.New(core))
	if err := a.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	return a, logs
}

func withPeer() context.Context {
	return client.NewContext(context.Background(), client.Info{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 7), Port: 5555}})
}

func userOf(t *testing.T, ctx context.Context) string {
	t.Helper()
	auth := client.FromContext(ctx).Auth
	if auth == nil {
		t.Fatal("no auth data in the context")
	}
	u, _ := auth.GetAttribute("user").(string)
	return u
}

func TestEachTokenAuthenticatesItsUser(t *testing.T) {
	a, _ := startAuth(t, writeTokens(t, t.TempDir(), "# team\nalice:"+aliceToken+"\n\n bob : "+bobToken+" \n"))
	for token, want := range map[string]string{aliceToken: "alice", bobToken: "bob"} {
		// gRPC metadata keys are lower case, HTTP header keys canonical: both work.
		for _, key := range []string{"authorization", "Authorization"} {
			ctx, err := a.Authenticate(withPeer(), map[string][]string{key: {"Bearer " + token}})
			if err != nil {
				t.Fatalf("%s: %v", want, err)
			}
			if got := userOf(t, ctx); got != want {
				t.Fatalf("user = %q, want %q", got, want)
			}
			if addr := client.FromContext(ctx).Addr; addr == nil || addr.String() != "127.0.0.7:5555" {
				t.Fatalf("peer address lost: %v", addr)
			}
		}
	}
}

func TestRefusalsAreLoggedWithPeerAndWithoutToken(t *testing.T) {
	a, logs := startAuth(t, writeTokens(t, t.TempDir(), "alice:"+aliceToken+"\n"))
	wrong := "wrong-token-abcdefghijklmnop"
	cases := []map[string][]string{
		{"authorization": {"Bearer " + wrong}},
		{"authorization": {"Basic " + wrong}},
		{"content-type": {"application/grpc"}},
		{"authorization": {"Bearer " + aliceToken + "x"}},
	}
	for _, sources := range cases {
		if _, err := a.Authenticate(withPeer(), sources); err == nil {
			t.Fatalf("accepted %v", sources)
		} else if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), aliceToken) {
			t.Fatalf("error echoes the token: %v", err)
		}
	}
	refusals := logs.FilterMessage("team OTLP request refused").All()
	if len(refusals) != len(cases) {
		t.Fatalf("%d refusal lines, want %d", len(refusals), len(cases))
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		if strings.Contains(line, wrong) || strings.Contains(line, aliceToken) {
			t.Fatalf("log line holds a token: %s", line)
		}
	}
	if peer := refusals[0].ContextMap()["peer"]; peer != "127.0.0.7:5555" {
		t.Fatalf("peer = %v", peer)
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func TestTokensFileIsReloadedWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	path := writeTokens(t, dir, "alice:"+aliceToken+"\n")
	a, _ := startAuth(t, path)
	if _, err := a.Authenticate(withPeer(), map[string][]string{"authorization": {"Bearer " + bobToken}}); err == nil {
		t.Fatal("bob accepted before being added")
	}
	// Rotate: alice's token revoked, bob added. Rename makes the change atomic, as an editor or a deploy would.
	tmp := filepath.Join(dir, "tokens.new")
	if err := os.WriteFile(tmp, []byte("bob:"+bobToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(2 * time.Second)
	_ = os.Chtimes(tmp, future, future)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, err := a.Authenticate(withPeer(), map[string][]string{"authorization": {"Bearer " + bobToken}})
		if err == nil && userOf(t, ctx) == "bob" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's token not accepted after the reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := a.Authenticate(withPeer(), map[string][]string{"authorization": {"Bearer " + aliceToken}}); err == nil {
		t.Fatal("alice's revoked token still accepted")
	}
}

func TestMalformedReloadKeepsPreviousTokens(t *testing.T) {
	dir := t.TempDir()
	path := writeTokens(t, dir, "alice:"+aliceToken+"\n")
	a, logs := startAuth(t, path)
	if err := os.WriteFile(path, []byte("alice "+aliceToken+"\nbob:"+bobToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(2 * time.Second)
	_ = os.Chtimes(path, future, future)
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage("team tokens file rejected; keeping the previous tokens").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("malformed file not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := a.Authenticate(withPeer(), map[string][]string{"authorization": {"Bearer " + aliceToken}}); err != nil {
		t.Fatalf("previous token dropped by a bad reload: %v", err)
	}
	for _, e := range logs.All() {
		if strings.Contains(toString(e.ContextMap()["error"]), aliceToken) {
			t.Fatal("error message holds a token")
		}
	}
}

func TestBadTokensFilesAreRejectedWithLineNumbers(t *testing.T) {
	dir := t.TempDir()
	for text, want := range map[string]string{
		"":                                           "no user:token line",
		"alice\n":                                    "line 1: expected user:token",
		"alice:short\n":                              "shorter than",
		"al ice:" + aliceToken + "\n":                "line 1: user name",
		"alice:" + aliceToken + "\nbob:" + aliceToken: "line 2: user bob has the same token as user alice",
	} {
		_, err := parseTokens(writeTokens(t, dir, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: error %v, want %q", text, err, want)
		}
		if strings.Contains(err.Error(), aliceToken) {
			t.Fatalf("error holds the token: %v", err)
		}
	}
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("empty tokens_file accepted")
	}
}

func TestFactoryBuildsTheExtension(t *testing.T) {
	f := NewFactory()
	if f.Type().String() != "teamauth" {
		t.Fatal(f.Type())
	}
	cfg := f.CreateDefaultConfig().(*Config)
	if cfg.ReloadInterval <= 0 {
		t.Fatal("no default reload interval")
	}
}
