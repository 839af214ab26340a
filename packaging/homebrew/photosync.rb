# Homebrew formula for photosync (macOS and Linux). Homebrew installs it
# from a tap (packaging/README.md makes a local one):
#   brew install --build-from-source "$USER/local/photosync"
#   brew services start photosync      # the launchd agent (systemd on Linux)
# It builds the release tagged v#{version} from the repository; a tap copies
# this file and bumps the tag and revision for each release.
class Photosync < Formula
  desc "Background photo uploader: a durable upload queue for photo folders"
  homepage "https://github.com/photosync/photosync"
  url "https://github.com/photosync/photosync.git",
      tag: "v0.1.0"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/photosync/photosync.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args
    generate_completions_from_executable(bin/"photosync", "completions")
    (man1/"photosync.1").write Utils.safe_popen_read(bin/"photosync", "man")
  end

  def caveats
    <<~EOS
      Write a config first (it says what it decided, and the next command):
        photosync init --source ~/Pictures --destination /Volumes/Backup/photos
      Then run it in the background at login:
        brew services start photosync
    EOS
  end

  # On macOS, the same agent as launchd/com.photosync.daemon.plist: started
  # at login, restarted (at most every 10 s) when it exits with an error (a
  # config error too, so fix the config and it starts), not after a clean
  # stop, and run as a low-priority background process. Homebrew's systemd
  # unit on Linux does not restart it; systemd/photosync.service does.
  service do
    run [opt_bin/"photosync", "daemon"]
    keep_alive successful_exit: false
    throttle_interval 10
    process_type :background
    nice 10
    log_path var/"log/photosync.log"
    error_log_path var/"log/photosync.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/photosync --version")
    (testpath/"photos").mkpath
    system bin/"photosync", "--config", testpath/"config.toml", "init",
           "--source", testpath/"photos", "--destination", testpath/"backup"
    assert_path_exists testpath/"config.toml"
    assert_match "photosync", shell_output("#{bin}/photosync completions bash")
  end
end
