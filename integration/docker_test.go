package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// dockerfileInstr is one instruction of a Dockerfile: its keyword (upper
// case) and its arguments, continuation lines joined.
type dockerfileInstr struct{ Cmd, Args string }

// parseDockerfile reads the instructions of the final stage of the
// Dockerfile at path.
func parseDockerfile(tb testing.TB, path string) []dockerfileInstr {
	tb.Helper()
	all := dockerfileInstrs(tb, path)
	last := 0
	for i, in := range all {
		if in.Cmd == "FROM" {
			last = i
		}
	}
	return all[last:]
}

// dockerfileInstrs reads every instruction of the Dockerfile at path.
func dockerfileInstrs(tb testing.TB, path string) []dockerfileInstr {
	tb.Helper()
	f, err := os.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	var all []dockerfileInstr
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur += more + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		all = append(all, dockerfileInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	require.NoError(tb, sc.Err())
	return all
}

// repoRoot is the module root (the integration tests run in ./integration).
func repoRoot(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	require.NoError(tb, err)
	return filepath.Dir(wd)
}

// TestDockerfileStatic checks, without Docker, what makes the image run
// alone: a writable VOLUME /data owned by the non-root user, the embedded
// data dir in it, the embedded NATS listening on 0.0.0.0 (set in the image
// only, by ENV), its ports exposed, and a HEALTHCHECK.
func TestDockerfileStatic(t *testing.T) {
	final := parseDockerfile(t, filepath.Join(repoRoot(t), "Dockerfile"))
	find := func(cmd string) []string {
		var out []string
		for _, in := range final {
			if in.Cmd == cmd {
				out = append(out, in.Args)
			}
		}
		return out
	}
	require.Contains(t, find("VOLUME"), "/data")
	users := find("USER")
	require.NotEmpty(t, users, "the image must not run as root")
	// distroless's nonroot is uid 65532, the owner /data is copied with.
	user := users[len(users)-1]
	require.Contains(t, []string{"nonroot", "nonroot:nonroot", "65532", "65532:65532"}, user)
	require.True(t, strings.HasSuffix(final[0].Args, ":nonroot"), "the final stage is a nonroot base: %s", final[0].Args)
	var chowned bool
	for _, c := range find("COPY") {
		if strings.Contains(c, "--chown=65532:65532") && strings.HasSuffix(c, " /data") {
			chowned = true
		}
	}
	require.True(t, chowned, "/data must be owned by the non-root user (65532): %v", find("COPY"))
	env := strings.Join(find("ENV"), " ")
	require.Contains(t, env, "APNS_WORKER_EMBEDDED_DATA_DIR=/data/nats")
	require.Contains(t, env, "APNS_WORKER_EMBEDDED_LISTEN=0.0.0.0:4222")
	require.Contains(t, env, "APNS_WORKER_HTTP_ADDR=0.0.0.0:8080")
	require.Contains(t, strings.Fields(strings.Join(find("EXPOSE"), " ")), "4222")
	hc := find("HEALTHCHECK")
	require.Len(t, hc, 1)
	require.Contains(t, hc[0], `"healthcheck"`)
	require.NotEmpty(t, find("ENTRYPOINT"))
}

// TestDockerfileBuildStage checks, without Docker, the image's build
// stage: its Go is the go.mod's release, and its `go build` (static, no
// cgo, as the distroless static base needs: it has no libc) builds a
// binary with no dynamic loader that runs.
func TestDockerfileBuildStage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is linux; the binary is checked as ELF")
	}
	all := dockerfileInstrs(t, filepath.Join(repoRoot(t), "Dockerfile"))
	require.Equal(t, "FROM", all[0].Cmd)
	image, _, _ := strings.Cut(all[0].Args, " ")
	goImage, ok := strings.CutPrefix(image, "golang:")
	require.True(t, ok, "the build stage is FROM golang:…: %s", image)
	mod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	require.NotNil(t, m, "go.mod has no go line")
	require.True(t, strings.HasPrefix(goImage, string(m[1])+"-") || goImage == string(m[1]),
		"the build image %s is not go.mod's Go %s", image, m[1])

	var build string
	for _, in := range all {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			build = in.Args
		}
	}
	require.Contains(t, build, "CGO_ENABLED=0 go build")
	require.Contains(t, build, "./cmd/apns-worker")
	bin := filepath.Join(t.TempDir(), "apns-worker")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/apns-worker")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "the binary needs a dynamic loader, which distroless/static lacks")
	}
	out, err = exec.Command(bin, "-h").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "APNS_WORKER_EMBEDDED_DATA_DIR")
}

// dockerAvailable reports whether a Docker engine answers. With
// APNS_WORKER_TEST_DOCKER=1 a missing engine fails the test; otherwise the
// test is skipped.
func dockerAvailable(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err == nil {
		return
	}
	if os.Getenv("APNS_WORKER_TEST_DOCKER") == "1" {
		t.Fatalf("APNS_WORKER_TEST_DOCKER=1 but no Docker engine answers: %v\n%s", err, out)
	}
	t.Skipf("no Docker engine (docker info: %v); set APNS_WORKER_TEST_DOCKER=1 to require one", err)
}

// docker runs a docker command within d and returns its trimmed output.
func docker(t *testing.T, d time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	require.NoError(t, err, "docker %s:\n%s", strings.Join(args, " "), out)
	return strings.TrimSpace(string(out))
}

// TestDockerImageRunsAlone builds the image and runs it as the README says,
// `docker run -p 4222:4222 -v VOLUME:/data IMAGE`, with nothing else: a
// publisher outside the container gets its jobs delivered (mock mode), the
// health check passes, and docker stop ends it cleanly.
func TestDockerImageRunsAlone(t *testing.T) {
	dockerAvailable(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	tag := "apns-worker-test:" + hex.EncodeToString(b[:])
	volume := "apns-worker-test-" + hex.EncodeToString(b[:])
	docker(t, 15*time.Minute, "build", "-t", tag, repoRoot(t))
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", tag).Run() })
	t.Cleanup(func() { _ = exec.Command("docker", "volume", "rm", "-f", volume).Run() })

	id := docker(t, time.Minute, "run", "-d", "-p", "127.0.0.1::4222", "-p", "127.0.0.1::8080", "-v", volume+":/data", tag)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", id).CombinedOutput()
			t.Logf("container log:\n%s", out)
		}
		_ = exec.Command("docker", "rm", "-f", id).Run()
	})
	port := func(p string) string { // the first line: 127.0.0.1:NNNN
		line, _, _ := strings.Cut(docker(t, time.Minute, "port", id, p), "\n")
		return strings.TrimSpace(line)
	}
	natsAddr, httpAddr := port("4222/tcp"), port("8080/tcp")
	waitFor(t, 60*time.Second, "the container to be ready", func() bool {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := client.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	_, js := connect(t, "nats://"+natsAddr)
	publishJobs(t, js, "docker", 100, func(i int) apns.Token { return token(0xd0, i) })
	waitDrained(t, js, 60*time.Second)
	waitFor(t, 60*time.Second, "the health check to pass", func() bool {
		return docker(t, time.Minute, "inspect", "-f", "{{.State.Health.Status}}", id) == "healthy"
	})
	docker(t, time.Minute, "stop", id)
	require.Equal(t, "0", docker(t, time.Minute, "inspect", "-f", "{{.State.ExitCode}}", id))
	logs := docker(t, time.Minute, "logs", id)
	require.Contains(t, logs, "EMBEDDED NATS LISTENS BEYOND THIS HOST")
	require.Contains(t, logs, `"jobs_delivered":100`)
}
