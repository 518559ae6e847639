package teamauth

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// A user name becomes a label value on every point of that user: a small, safe alphabet keeps it readable in
// PromQL and Grafana variables.
var userPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// minTokenLen keeps guessable tokens out; `openssl rand -hex 24` gives 48 characters.
const minTokenLen = 16

type entry struct {
	user string
	hash [sha256.Size]byte
}

// tokenSet holds the hash of every token, never the token itself, so a memory dump or a debug print of the
// extension shows no secret.
type tokenSet struct {
	entries []entry
}

// parseTokens reads `user:token` lines. Errors name the file and the line number, never the line's content
// (it holds a secret).
func parseTokens(path string) (*tokenSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	defer f.Close()
	set := &tokenSet{}
	seen := map[[sha256.Size]byte]string{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, token, ok := strings.Cut(line, ":")
		user, token = strings.TrimSpace(user), strings.TrimSpace(token)
		switch {
		case !ok:
			return nil, fmt.Errorf("tokens file %s line %d: expected user:token", path, n)
		case !userPattern.MatchString(user):
			return nil, fmt.Errorf("tokens file %s line %d: user name must be 1-64 of A-Z a-z 0-9 . _ @ - (starting with a letter or digit)", path, n)
		case len(token) < minTokenLen:
			return nil, fmt.Errorf("tokens file %s line %d (user %s): token shorter than %d characters", path, n, user, minTokenLen)
		case strings.ContainsAny(token, " \t"):
			return nil, fmt.Errorf("tokens file %s line %d (user %s): token contains whitespace", path, n, user)
		}
		h := sha256.Sum256([]byte(token))
		if other, dup := seen[h]; dup {
			return nil, fmt.Errorf("tokens file %s line %d: user %s has the same token as user %s (each token must identify one user)", path, n, user, other)
		}
		seen[h] = user
		set.entries = append(set.entries, entry{user: user, hash: h})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(set.entries) == 0 {
		return nil, fmt.Errorf("tokens file %s has no user:token line", path)
	}
	return set, nil
}

// lookup compares the presented token with every entry in constant time (on fixed-length hashes, so neither the
// position of a mismatch nor a token's length leaks through timing) and returns the matching user.
func (s *tokenSet) lookup(token string) (string, bool) {
	h := sha256.Sum256([]byte(token))
	user, found := "", 0
	for _, e := range s.entries {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			user, found = e.user, 1
		}
	}
	return user, found == 1
}
