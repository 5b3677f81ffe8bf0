# Sourced on the GPU box: put carried copies of the Debian datasets where their packages install them
# (dataset-fashion-mnist, fonts-noto-color-emoji); the box reaches no package registry.
if [ -d .carry/data/fashion-mnist ]; then
  mkdir -p /usr/share/datasets/fashion-mnist && cp .carry/data/fashion-mnist/* /usr/share/datasets/fashion-mnist/
fi
if [ -f .carry/data/noto/NotoColorEmoji.ttf ]; then
  mkdir -p /usr/share/fonts/truetype/noto && cp .carry/data/noto/NotoColorEmoji.ttf /usr/share/fonts/truetype/noto/
fi
